"""The web studio: a wizard and job monitor over the same API the CLI calls.

Nothing outside this package imports it, so deleting it leaves training untouched.
"""
