"""Reliability and security tests (issue 7): concurrency, crashes, corruption, bad input,
isolation, an unreachable server and fallback honesty, through real processes and stores."""
