# sb-otel's fish integration (printed by `sb-otel init fish`; in ~/.config/fish/config.fish:
# sb-otel init fish | source).
# This shell's session ends once, when the shell does, with the status it exits with: `exit N` reports N, a plain
# `exit` or Ctrl-D a normal end, SIGHUP (a closed terminal) 129 and SIGTERM 143 with reason `signal`.
# The end is a fish_exit event handler: your own fish_exit handlers, defined before or after this, run beside it.
# A HUP or TERM from `kill` ends the shell from sb-otel's signal handler, so yours for that signal run only if they
# were defined before this; a closed terminal leaves the shell to end at its end of input, running them all.
# Nothing runs at the prompt, so `$status` and the prompt are untouched.

function __sb_otel_end --argument-names rc --description 'end the session once; rc = the exit status'
    test "$__sb_otel_pid" = "$fish_pid"; and not set -q __sb_otel_ended; or return 0
    set -g __sb_otel_ended 1
    set -l code 0
    set -l reason
    if set -q __sb_otel_signal
        set code $__sb_otel_signal
        set reason --reason signal
    else if test "$__sb_otel_exit_args" = 0
        set code 0 # a plain `exit`: a normal end, whatever the last command returned
    else if set -q __sb_otel_exit_args; or not status is-interactive
        set code $rc # `exit N`, or the end of a script
    end # else Ctrl-D: a normal end
    $__sb_otel_bin emit end $__sb_otel_session --store $__sb_otel_store --exit-code $code $reason >/dev/null 2>&1
end

function __sb_otel_on_exit --on-event fish_exit
    __sb_otel_end $status
end

function __sb_otel_on_signal --on-signal HUP --on-signal TERM --description 'the shell ends, as without a handler'
    set -l code 129
    test "$argv[1]" = SIGTERM; and set code 143
    set -g __sb_otel_signal $code
    __sb_otel_end $code
    if test $code = 129; and status is-interactive; and not test -t 0
        return # the terminal is gone: fish ends at its end of input, and fish_exit handlers still run
    end
    builtin exit $code
end

function exit --description 'the builtin, noting whether a status was given (alone: a normal end)'
    set -l rc $status
    set -g __sb_otel_exit_args (count $argv)
    if set -q argv[1]
        builtin exit $argv
    else
        builtin exit $rc
    end
    set -e __sb_otel_exit_args
end

function __sb_otel_begin --argument-names pid store component session traceparent bin
    if test "$__sb_otel_pid" = "$fish_pid" # sourced again in this shell: it keeps its session
        if test -n "$session" -a "$session" != "$__sb_otel_session"
            $bin emit end $session --store $store >/dev/null 2>&1
        end
        return 0
    end
    set -l new $session
    if test "$pid" != "$fish_pid" # started for another process (a saved copy): start our own
        test -n "$session"; and $bin emit end $session --store $store >/dev/null 2>&1
        set -l lines ($bin emit start --component $component --shell-type fish --pid $fish_pid --store $store)
        or return 0
        printf '%s\n' $lines | source
        set new $SB_OTEL_SESSION_ID
    else if test -n "$session"
        set -gx SB_OTEL_SESSION_ID $session
        test -n "$traceparent"; and set -gx TRACEPARENT $traceparent
    else
        set new $SB_OTEL_SESSION_ID # `init` found this shell's session already open
    end
    test -n "$new"; or return 0
    set -g __sb_otel_pid $fish_pid
    set -g __sb_otel_session $new
    set -g __sb_otel_store $store
    set -g __sb_otel_bin $bin
end
