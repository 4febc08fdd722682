"""Errors that mean "bad input": the CLI turns them into one line and exit code 2."""


class InputError(Exception):
    """Bad user input (recipe, argument or data); the message names the key or file, the value and the fix."""


class RecipeError(InputError):
    """A recipe key has a wrong name, type or value."""


class DataError(InputError):
    """A data set cannot be found or read."""
