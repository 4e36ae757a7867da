# sb-otel's fish integration (printed by `sb-otel init fish`; in ~/.config/fish/config.fish:
# sb-otel init fish | source).
# This shell's session ends once, when the shell does, with the status it exits with: `exit N` reports N, a plain
# `exit` or Ctrl-D a normal end, SIGHUP (a closed terminal) 129 and SIGTERM 143 with reason `signal`.
# The end is a fish_exit event handler: your own fish_exit handlers, defined before or after this, run beside it.
# A HUP or TERM from `kill` ends the shell from sb-otel's signal handler, so yours for that signal run only if they
# were defined before this; a closed terminal leaves the shell to end at its end of input, running them all.
# Each command line becomes a span of the session, recorded with builtins only (no process per command): a
# fish_preexec handler gives it its own TRACEPARENT, a fish_postexec handler appends one line to the session's
# spool (program name only, unless SB_OTEL_SHELL_COMMAND_LINES=true), timed by $CMD_DURATION and /proc/uptime read
# by the `read` builtin (fish has no clock of its own); `$status` and the prompt are untouched.

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

function __sb_otel_escape --description 'one spool field: backslash, tab and newline escaped'
    string replace -a -- \\ \\\\ $argv[1] | string replace -a -- \t \\t | string join \\n
end

function __sb_otel_preexec --argument-names line
    set -q __sb_otel_spool; and test "$__sb_otel_pid" = "$fish_pid"; or return
    set -g __sb_otel_cwd $PWD
    if test "$__sb_otel_mode" = f
        set -g __sb_otel_command $line
    else # the program's name only: no argument is ever written down
        string replace -r '(?s)^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:\S*/)?(\S*).*$' '$1' -- $line | read -g __sb_otel_command
    end
    # span ids come 16 at a time: fish makes one random number per `random`, and each ( ) costs
    set -q __sb_otel_ids[1]; or set -g __sb_otel_ids (printf '%08x%08x\n' (for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32; random 0 4294967295; end))
    set -g __sb_otel_span $__sb_otel_ids[1]
    set -e __sb_otel_ids[1]
    test "$__sb_otel_span" != 0000000000000000; or set -g __sb_otel_span 0000000000000001
    set -q __sb_otel_trace[1]; and set -gx TRACEPARENT 00-$__sb_otel_trace-$__sb_otel_span-$__sb_otel_flags
    set -g __sb_otel_running 1
end

function __sb_otel_postexec
    set -l rc $status
    set -q __sb_otel_running; or return $rc
    set -e __sb_otel_running
    set -q __sb_otel_exit_args; and return $rc # the shell is leaving: `exit` is no command of the session's
    read -l up _ </proc/uptime; or return $rc
    # its end as "boot+uptime" and its start as "-duration" (CMD_DURATION, ms): the reader adds them up (no math)
    set -l cwd $__sb_otel_cwd
    string match -qr '[\\\\\t\n]' -- $cwd; and set cwd (__sb_otel_escape $cwd)
    set -l command $__sb_otel_command
    string match -qr '[\\\\\t\n]' -- $command; and set command (__sb_otel_escape $command)
    printf '%s\t%s\t-%se-3\t%s+%s\t%s\t%s\t%s\n' $__sb_otel_mode $__sb_otel_span $CMD_DURATION $__sb_otel_boot $up \
        $rc "$cwd" "$command" >>$__sb_otel_spool
    test -z "$__sb_otel_traceparent"; or set -gx TRACEPARENT $__sb_otel_traceparent
    return $rc
end

function __sb_otel_commands --argument-names folder mode boot
    test -n "$folder" -a -n "$boot" -a -n "$__sb_otel_session"; and test -r /proc/uptime; or return 0
    set -g __sb_otel_spool $folder/$__sb_otel_session.spool
    set -g __sb_otel_mode $mode
    set -g __sb_otel_boot $boot
    set -g __sb_otel_traceparent "$TRACEPARENT"
    set -g __sb_otel_trace (string match -r -g '^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$' -- $__sb_otel_traceparent)
    set -g __sb_otel_flags (string match -r -g '^00-[0-9a-f]{32}-[0-9a-f]{16}-([0-9a-f]{2})$' -- $__sb_otel_traceparent)
    printf 'v\tfish\t%s\n' $version >>$__sb_otel_spool
    function __sb_otel_on_preexec --on-event fish_preexec
        __sb_otel_preexec $argv
    end
    function __sb_otel_on_postexec --on-event fish_postexec
        __sb_otel_postexec
    end
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

function __sb_otel_begin --argument-names pid store component session traceparent bin folder mode boot
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
        test -n "$traceparent"; and set -gx TRACEPARENT $traceparent
    end
    test -n "$new"; or return 0
    set -g __sb_otel_pid $fish_pid
    set -g __sb_otel_session $new
    set -g __sb_otel_store $store
    set -g __sb_otel_bin $bin
    __sb_otel_commands "$folder" "$mode" "$boot"
end
