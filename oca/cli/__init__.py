"""The operator CLI ``oca``: parses arguments and calls library functions."""
