"""trainkit's version, in a module of its own: the store tags every run with it, and the
package root (which lazily imports the manager) must not be imported from below."""

__version__ = "0.1.0"
