"""The one exception type the course raises for problems a reader can fix."""


class LlamaError(Exception):
    """Something wrong with the reader's files or input.

    The message says what was wrong and how to fix it. The command-line demo
    prints it as one paragraph instead of a traceback.
    """
