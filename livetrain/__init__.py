"""livetrain's kernel: what every part shares (errors, configuration, AWS error messages) and the command line.

Parts import `livetrain.errors`, `livetrain.config`, `livetrain.arguments` and `livetrain.aws_errors`, which
import only the standard library; `livetrain.cli`, the entry point, imports every part's commands and is
imported by none of them.
"""
