# sb-otel's bash integration (printed by `sb-otel init bash`; in ~/.bashrc: eval "$(sb-otel init bash)").
# This shell's session ends once, when the shell does, with the status it exits with: `exit N` reports N, a plain
# `exit` or Ctrl-D a normal end, SIGHUP (a closed terminal) 129 and SIGTERM 143 with reason `signal`.
# `trap` is wrapped so that an EXIT, HUP, TERM or DEBUG trap set before or after this runs beside sb-otel's instead
# of replacing it; `trap -p` shows your own.
# Each command line becomes a span of the session, recorded with builtins only (no process per command): PS0 marks
# a line as read, the DEBUG trap notes its start, its first command and gives it its own TRACEPARENT, and the first
# PROMPT_COMMAND entry appends one line to the session's spool (program name only, unless
# SB_OTEL_SHELL_COMMAND_LINES=true) and hands `$?` on unchanged. Both are put back if an rc file replaces them.

__sb_otel_end() {  # end the session once; $1 = the shell's exit status
  [[ ${BASHPID:-$$} == "${__sb_otel_pid-}" && -z ${__sb_otel_ended-} ]] || return 0
  __sb_otel_ended=1
  local __sb_otel_code=0 __sb_otel_reason=()
  if [[ -n ${__sb_otel_signal-} ]]; then
    __sb_otel_code=$__sb_otel_signal __sb_otel_reason=(--reason signal)
  elif [[ ${__sb_otel_exit_args-} == 0 ]]; then
    __sb_otel_code=0  # a plain `exit`: a normal end, whatever the last command returned
  elif [[ -n ${__sb_otel_exit_args-} || $- != *i* ]]; then
    __sb_otel_code=$1  # `exit N`, or the end of a script
  fi  # else Ctrl-D: a normal end
  "$__sb_otel_bin" emit end "$__sb_otel_session" --store "$__sb_otel_store" \
    --exit-code "$__sb_otel_code" "${__sb_otel_reason[@]}" >/dev/null 2>&1
}

__sb_otel_exit_trap() {  # EXIT: end the session, then give the user's EXIT action the same $?
  local __sb_otel_rc=$?
  __sb_otel_end "$__sb_otel_rc"
  return "$__sb_otel_rc"
}

__sb_otel_signal_trap() {  # HUP/TERM: $1 = the status to report, $2 = the user's own action for it
  local __sb_otel_rc=$?
  __sb_otel_signal=$1
  if [[ -z $2 ]]; then  # nobody else handles it: the shell ends, as it would without a trap
    # bash runs no EXIT trap for an `exit` in a signal trap taken at the prompt: do its work here, once
    __sb_otel_end "$1"
    builtin trap - EXIT
    eval "${__sb_otel_user_EXIT-}"
    # then die of SIGHUP as an untrapped shell does (an interactive bash ignores TERM): an `exit` here is lost
    # when bash takes the trap just as PROMPT_COMMAND returns, and the shell would stay at its prompt
    builtin trap - HUP
    builtin kill -s HUP "${BASHPID:-$$}"
    builtin exit "$1"
  fi
  return "$__sb_otel_rc"  # the user's action runs next; an `exit` in it ends the session (see `exit`)
}

__sb_otel_install() {  # (re)install sb-otel's trap for $1 (EXIT, HUP or TERM) around the user's action
  local __sb_otel_user="__sb_otel_user_$1"
  case $1 in
    EXIT) builtin trap -- '__sb_otel_exit_trap; eval "${__sb_otel_user_EXIT-}"' EXIT ;;
    DEBUG)
      if [[ -n ${__sb_otel_user_DEBUG-} ]]; then
        builtin trap -- '__sb_otel_debug "$?"; eval -- "$__sb_otel_user_DEBUG"' DEBUG
      elif [[ -n ${__sb_otel_spool-} ]]; then
        builtin trap -- '${__sb_otel_armed:+__sb_otel_preexec}' DEBUG
      else
        builtin trap - DEBUG
      fi
      ;;
    *)
      if [[ -n ${!__sb_otel_user+set} && -z ${!__sb_otel_user} ]]; then
        builtin trap -- '' "$1"  # ignored by the user: the shell survives it, and so does the session
      else
        builtin trap -- "__sb_otel_signal_trap $2 \"\${$__sb_otel_user-}\"; eval \"\${$__sb_otel_user-}\"; __sb_otel_signal=" "$1"
      fi
      ;;
  esac
}

__sb_otel_set() {  # the user's action $2 for $1 (`-`: none), kept beside sb-otel's; $3 = the signal's status
  case $2 in
    __sb_otel_* | '${__sb_otel_armed:+__sb_otel_preexec}') ;;  # sb-otel's own action, as a full `builtin trap -p` listing shows it: already in place
    -) unset "__sb_otel_user_$1" ;;
    *) printf -v "__sb_otel_user_$1" %s "$2" ;;
  esac
  __sb_otel_install "$1" "${3-}"
}

__sb_otel_show() {  # one `trap -p` line for the user's own action on $1, as bash prints it
  local __sb_otel_user="__sb_otel_user_$1" __sb_otel_q="'\\''"
  [[ -n ${!__sb_otel_user+set} ]] || return 0
  local __sb_otel_action=${!__sb_otel_user}
  printf "trap -- '%s' %s\n" "${__sb_otel_action//\'/$__sb_otel_q}" "$2"
}

trap() {  # the builtin, except that EXIT, HUP, TERM and DEBUG chain with sb-otel's traps in this shell
  if [[ ${BASHPID:-$$} != "${__sb_otel_pid-}" ]]; then builtin trap "$@"; return; fi
  local __sb_otel_list=0 __sb_otel_sig __sb_otel_rest=() __sb_otel_status=0
  case ${1-} in
    -p) __sb_otel_list=1; shift ;;
    --) shift ;;
    -) ;;
    -*) builtin trap "$@"; return ;;
  esac
  if (( __sb_otel_list || $# == 0 )); then
    (( $# )) || set -- EXIT HUP {2..14} TERM {16..64} DEBUG RETURN ERR
    for __sb_otel_sig; do
      case ${__sb_otel_sig^^} in
        EXIT | SIGEXIT | 0) __sb_otel_show EXIT EXIT ;;
        HUP | SIGHUP | 1) __sb_otel_show HUP SIGHUP ;;
        TERM | SIGTERM | 15) __sb_otel_show TERM SIGTERM ;;
        DEBUG) __sb_otel_show DEBUG DEBUG ;;
        *) builtin trap -p "$__sb_otel_sig" || __sb_otel_status=$? ;;
      esac
    done
    return "$__sb_otel_status"
  fi
  local __sb_otel_action=-
  if (( $# > 1 )); then __sb_otel_action=$1; shift; fi  # `trap SIG` alone resets SIG
  for __sb_otel_sig; do
    case ${__sb_otel_sig^^} in
      EXIT | SIGEXIT | 0) __sb_otel_set EXIT "$__sb_otel_action" ;;
      HUP | SIGHUP | 1) __sb_otel_set HUP "$__sb_otel_action" 129 ;;
      TERM | SIGTERM | 15) __sb_otel_set TERM "$__sb_otel_action" 143 ;;
      DEBUG) __sb_otel_set DEBUG "$__sb_otel_action" ;;
      *) __sb_otel_rest+=("$__sb_otel_sig") ;;
    esac
  done
  if (( ${#__sb_otel_rest[@]} )); then builtin trap -- "$__sb_otel_action" "${__sb_otel_rest[@]}" || __sb_otel_status=$?; fi
  return "$__sb_otel_status"
}

# -- every command a span -------------------------------------------------------------------------------------

__sb_otel_escape() {  # $1 with backslash, tab and newline escaped, into __sb_otel_escaped (one spool field)
  local __sb_otel_text=${1//\\/\\\\}
  __sb_otel_text=${__sb_otel_text//$'\t'/\\t}
  __sb_otel_escaped=${__sb_otel_text//$'\n'/\\n}
}

__sb_otel_preexec() {  # DEBUG trap, first command of a line just read (PS0 armed it): note it and its start
  __sb_otel_armed=
  [[ $BASH_COMMAND != __sb_otel_precmd* && -z ${COMP_LINE-} ]] || return 0  # an empty line: the prompt again
  __sb_otel_began=$EPOCHREALTIME __sb_otel_cwd=$PWD
  local __sb_otel_line=$BASH_COMMAND
  if [[ $__sb_otel_mode != f ]]; then  # the program's name only: no argument is ever written down
    while [[ $__sb_otel_line =~ ^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*[[:space:]]+(.*)$ ]]; do
      __sb_otel_line=${BASH_REMATCH[1]}
    done
    __sb_otel_line=${__sb_otel_line#"${__sb_otel_line%%[![:space:]]*}"}
    __sb_otel_line=${__sb_otel_line%%[[:space:]]*}
    __sb_otel_line=${__sb_otel_line##*/}
  fi
  __sb_otel_command=$__sb_otel_line
  if [[ -n ${SRANDOM-} ]]; then
    printf -v __sb_otel_span '%08x%08x' "$SRANDOM" "$SRANDOM"
  else
    printf -v __sb_otel_span '%04x%04x%04x%04x' "$RANDOM" "$RANDOM" "$RANDOM" "$RANDOM"
  fi
  [[ $__sb_otel_span != 0000000000000000 ]] || __sb_otel_span=0000000000000001
  [[ -z $__sb_otel_trace ]] || export TRACEPARENT="00-$__sb_otel_trace-$__sb_otel_span-$__sb_otel_flags"
  [[ ${PROMPT_COMMAND[0]-} == *__sb_otel_precmd* ]] || PROMPT_COMMAND[0]="__sb_otel_precmd;${PROMPT_COMMAND[0]-}"
}

__sb_otel_debug() {  # DEBUG trap beside the user's own: $1 = $? before it, handed on to the user's action
  [[ -z ${__sb_otel_armed-} ]] || __sb_otel_preexec
  return "$1"
}

__sb_otel_precmd() {  # first in PROMPT_COMMAND: the line's command ends; append its span's line; keep $?
  local __sb_otel_rc=$?
  if [[ -n ${__sb_otel_began-} ]]; then
    local __sb_otel_cwd_field __sb_otel_command_field
    __sb_otel_escape "$__sb_otel_cwd"
    __sb_otel_cwd_field=$__sb_otel_escaped
    __sb_otel_escape "$__sb_otel_command"
    __sb_otel_command_field=$__sb_otel_escaped
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$__sb_otel_mode" "$__sb_otel_span" "$__sb_otel_began" \
      "$EPOCHREALTIME" "$__sb_otel_rc" "$__sb_otel_cwd_field" "$__sb_otel_command_field" >>"$__sb_otel_spool"
    __sb_otel_began=
    [[ -z $__sb_otel_traceparent ]] || export TRACEPARENT="$__sb_otel_traceparent"
  fi
  [[ ${PS0-} == *__sb_otel_ps0* ]] || PS0="\${__sb_otel_ps0[__sb_otel_armed=1]-}${PS0-}"
  return "$__sb_otel_rc"
}

__sb_otel_commands() {  # $1 = the spool folder, $2 = the mode: start recording commands
  [[ -n $1 && -n ${__sb_otel_session-} && ${BASH_VERSINFO[0]:-0} -ge 5 ]] || return 0
  __sb_otel_spool="$1/$__sb_otel_session.spool" __sb_otel_mode=$2
  __sb_otel_traceparent=${TRACEPARENT-}
  __sb_otel_trace= __sb_otel_flags=
  if [[ $__sb_otel_traceparent =~ ^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$ ]]; then
    __sb_otel_trace=${BASH_REMATCH[1]} __sb_otel_flags=${BASH_REMATCH[2]}
  fi
  printf 'v\tbash\t%s\n' "$BASH_VERSION" >>"$__sb_otel_spool"
  __sb_otel_ps0=()
  [[ ${PS0-} == *__sb_otel_ps0* ]] || PS0="\${__sb_otel_ps0[__sb_otel_armed=1]-}${PS0-}"
  # first in PROMPT_COMMAND's first entry (a string, or an array's first element: either way it runs first and
  # sees the command's $?; `PROMPT_COMMAND=("$PROMPT_COMMAND" …)` in an rc file keeps it)
  [[ ${PROMPT_COMMAND[0]-} == *__sb_otel_precmd* ]] || PROMPT_COMMAND[0]="__sb_otel_precmd;${PROMPT_COMMAND[0]-}"
  __sb_otel_install DEBUG
}

exit() {  # the builtin, noting whether a status was given (`exit` alone is a normal end)
  local __sb_otel_rc=$?
  __sb_otel_exit_args=$#
  [[ -z ${__sb_otel_signal-} ]] || __sb_otel_end "$__sb_otel_rc"  # in a HUP/TERM trap: no EXIT trap follows
  builtin exit "${@:-$__sb_otel_rc}"
  __sb_otel_rc=$?  # still here (stopped jobs, too many arguments): nothing ended
  unset __sb_otel_exit_args
  return "$__sb_otel_rc"
}

logout() {
  local __sb_otel_rc=$?
  __sb_otel_exit_args=$#
  builtin logout "${@:-$__sb_otel_rc}"
  __sb_otel_rc=$?
  unset __sb_otel_exit_args
  return "$__sb_otel_rc"
}

__sb_otel_begin() {  # pid store component session traceparent sb-otel spool-folder mode: adopt `init`'s session
  local __sb_otel_me=${BASHPID:-$$}
  if [[ ${__sb_otel_pid-} == "$__sb_otel_me" ]]; then  # evaluated again in this shell: it keeps its session
    [[ -z $4 || $4 == "${__sb_otel_session-}" ]] || "$6" emit end "$4" --store "$2" >/dev/null 2>&1
    return 0
  fi
  local __sb_otel_new=$4
  if [[ $1 != "$__sb_otel_me" ]]; then  # started for another process (a subshell, a saved copy): start our own
    [[ -z $4 ]] || "$6" emit end "$4" --store "$2" >/dev/null 2>&1
    local __sb_otel_lines
    __sb_otel_lines=$("$6" emit start --component "$3" --shell-type bash --pid "$__sb_otel_me" --store "$2") || return 0
    eval "$__sb_otel_lines"
    __sb_otel_new=${SB_OTEL_SESSION_ID-}
  elif [[ -n $4 ]]; then
    export SB_OTEL_SESSION_ID="$4"
    [[ -z $5 ]] || export TRACEPARENT="$5"
  else
    __sb_otel_new=${SB_OTEL_SESSION_ID-}  # `init` found this shell's session already open
    [[ -z $5 ]] || export TRACEPARENT="$5"
  fi
  [[ -n $__sb_otel_new ]] || return 0
  __sb_otel_pid=$__sb_otel_me __sb_otel_session=$__sb_otel_new __sb_otel_store=$2 __sb_otel_bin=$6
  eval "$(builtin trap -p EXIT HUP TERM DEBUG)"  # traps set before this line: through `trap`, beside sb-otel's
  __sb_otel_install EXIT
  [[ -n ${__sb_otel_user_HUP+set} ]] || __sb_otel_install HUP 129
  [[ -n ${__sb_otel_user_TERM+set} ]] || __sb_otel_install TERM 143
  __sb_otel_commands "${7-}" "${8-p}"
}
