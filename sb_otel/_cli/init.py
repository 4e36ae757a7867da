"""``sb-otel init bash|zsh|fish``: the click face of :mod:`sb_otel._cli.shell_init` (help and mistakes).

A shell's start-up is answered by :func:`sb_otel._cli.shell_init.run` before click is imported; click sees
``init`` only for ``--help``, an unknown shell or a malformed option, and then does the same work.
"""

from __future__ import annotations

import click

from sb_otel._cli.app import _store_option, cli
from sb_otel._cli.shell_init import SHELLS, answer


@cli.command("init")
@click.argument("shell", type=click.Choice(SHELLS))
@click.option("--component", default=None, help="Component name of the session (default: the shell's name).")
@_store_option
def init(shell: str, component: str | None, store_location: str | None) -> int:
    """Start this shell's session and print SHELL's integration that ends it; evaluate it in the rc file.

    \b
    bash (~/.bashrc):                eval "$(sb-otel init bash)"
    zsh (~/.zshrc):                  eval "$(sb-otel init zsh)"
    fish (~/.config/fish/config.fish): sb-otel init fish | source

    The session ends once, when the shell does: 'exit N' reports N, a plain 'exit' or Ctrl-D a normal end, a
    closed terminal (SIGHUP) 129 and SIGTERM 143. Your own EXIT traps (bash), zshexit hooks (zsh) and fish_exit
    handlers (fish) keep running beside it, set before or after this line.

    Each command line becomes a span of the session (program name, status, duration, directory), recorded by
    the shell's builtins into the session's spool beside the store, and runs with its own TRACEPARENT;
    SB_OTEL_SHELL_COMMAND_LINES=true records whole lines, secrets redacted. 'sb-otel show ID' lists them.
    """
    return answer(shell, component, store_location)
