# sb-otel's zsh integration (printed by `sb-otel init zsh`; in ~/.zshrc: eval "$(sb-otel init zsh)").
# This shell's session ends once, when the shell does, with the status it exits with: `exit N` reports N, a plain
# `exit` or Ctrl-D a normal end, SIGHUP (a closed terminal) 129 and SIGTERM 143 with reason `signal`.
# The end is a zshexit hook (zshexit_functions, as add-zsh-hook adds them): your own zshexit hooks and EXIT traps,
# set before or after this, run beside it. A HUP or TERM trap of your own replaces sb-otel's (then a closed
# terminal ends the session as your trap's exit says).
# Each command line becomes a span of the session, recorded with builtins only (no process per command): a preexec
# hook notes its start and gives it its own TRACEPARENT, the first precmd hook appends one line to the session's
# spool (program name only, unless SB_OTEL_SHELL_COMMAND_LINES=true); `$?` and the prompt are untouched.

__sb_otel_end() {  # end the session once; $1 = the shell's exit status
  (( ${ZSH_SUBSHELL:-0} == 0 )) && [[ $$ == "${__sb_otel_pid-}" && -z ${__sb_otel_ended-} ]] || return 0
  __sb_otel_ended=1
  local __sb_otel_code=0
  local -a __sb_otel_reason
  if [[ -n ${__sb_otel_signal-} ]]; then
    __sb_otel_code=$__sb_otel_signal __sb_otel_reason=(--reason signal)
  elif [[ ${__sb_otel_exit_args-} == 0 ]]; then
    __sb_otel_code=0  # a plain `exit`: a normal end, whatever the last command returned
  elif [[ -n ${__sb_otel_exit_args-} || ! -o interactive ]]; then
    __sb_otel_code=$1  # `exit N`, or the end of a script
  fi  # else Ctrl-D: a normal end
  "$__sb_otel_bin" emit end "$__sb_otel_session" --store "$__sb_otel_store" \
    --exit-code "$__sb_otel_code" "${__sb_otel_reason[@]}" >/dev/null 2>&1
}

__sb_otel_zshexit() {
  __sb_otel_end $?
}

__sb_otel_status() { return "$1"; }

__sb_otel_run_hooks() {  # stands in for the zshexit hooks while `exit` runs in a function (see __sb_otel_leave)
  local __sb_otel_rc=$? __sb_otel_hook
  for __sb_otel_hook in "${__sb_otel_hooks[@]}"; do
    __sb_otel_status "$__sb_otel_rc"
    "$__sb_otel_hook"
  done
}

# zsh runs only the first zshexit hook when `exit` is called in a function, as the wrappers below do (and a
# `return` in a function that hook calls ends it when the call is deeper than one function): while the builtin
# runs, one hook stands in for them all, in zsh's order (the zshexit function, then zshexit_functions).
__sb_otel_stand_in() {
  typeset -ga __sb_otel_saved=("${zshexit_functions[@]}") __sb_otel_hooks=("${zshexit_functions[@]}")
  if (( ${+functions[zshexit]} )); then
    functions[__sb_otel_user_zshexit]=$functions[zshexit]
    unfunction zshexit
    __sb_otel_hooks=(__sb_otel_user_zshexit "${__sb_otel_hooks[@]}")
  fi
  zshexit_functions=(__sb_otel_run_hooks)
}

__sb_otel_stand_down() {  # the builtin returned (running jobs, a bad argument): nothing ended, hooks back
  zshexit_functions=("${__sb_otel_saved[@]}")
  if (( ${+functions[__sb_otel_user_zshexit]} )); then
    functions[zshexit]=$functions[__sb_otel_user_zshexit]
    unfunction __sb_otel_user_zshexit
  fi
  unset __sb_otel_exit_args
}

# -- every command a span -------------------------------------------------------------------------------------

__sb_otel_escape() {  # $1 with backslash, tab and newline escaped, into __sb_otel_escaped (one spool field)
  local __sb_otel_text=${1//\\/\\\\}
  __sb_otel_text=${__sb_otel_text//$'\t'/\\t}
  typeset -g __sb_otel_escaped=${__sb_otel_text//$'\n'/\\n}
}

__sb_otel_preexec() {  # $1 = the command line as typed: note it, its start, and give it its own TRACEPARENT
  typeset -g __sb_otel_began=$EPOCHREALTIME __sb_otel_cwd=$PWD __sb_otel_command=$1
  if [[ $__sb_otel_mode != f ]]; then  # the program's name only: no argument is ever written down
    local __sb_otel_word
    __sb_otel_command=
    for __sb_otel_word in ${(z)1}; do
      [[ $__sb_otel_word == [A-Za-z_]*=* ]] && continue
      __sb_otel_command=${__sb_otel_word:t}
      break
    done
  fi
  typeset -g __sb_otel_span
  printf -v __sb_otel_span '%04x%04x%04x%04x' $(( RANDOM * 2 + RANDOM % 2 )) $(( RANDOM * 2 + RANDOM % 2 )) \
    $(( RANDOM * 2 + RANDOM % 2 )) $(( RANDOM * 2 + RANDOM % 2 ))
  [[ $__sb_otel_span != 0000000000000000 ]] || __sb_otel_span=0000000000000001
  [[ -z $__sb_otel_trace ]] || export TRACEPARENT="00-$__sb_otel_trace-$__sb_otel_span-$__sb_otel_flags"
}

__sb_otel_precmd() {  # first precmd hook: the line's command ended; append its span's line
  local __sb_otel_rc=$?
  [[ -n ${__sb_otel_began-} ]] || return "$__sb_otel_rc"
  local __sb_otel_cwd_field __sb_otel_command_field
  __sb_otel_escape "$__sb_otel_cwd"
  __sb_otel_cwd_field=$__sb_otel_escaped
  __sb_otel_escape "$__sb_otel_command"
  __sb_otel_command_field=$__sb_otel_escaped
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$__sb_otel_mode" "$__sb_otel_span" "$__sb_otel_began" \
    "$EPOCHREALTIME" "$__sb_otel_rc" "$__sb_otel_cwd_field" "$__sb_otel_command_field" >>"$__sb_otel_spool"
  __sb_otel_began=
  [[ -z $__sb_otel_traceparent ]] || export TRACEPARENT="$__sb_otel_traceparent"
  return "$__sb_otel_rc"
}

__sb_otel_commands() {  # $1 = the spool folder, $2 = the mode: start recording commands
  [[ -n $1 && -n ${__sb_otel_session-} ]] || return 0
  zmodload zsh/datetime 2>/dev/null || return 0  # $EPOCHREALTIME
  typeset -g __sb_otel_spool="$1/$__sb_otel_session.spool" __sb_otel_mode=$2
  typeset -g __sb_otel_traceparent=${TRACEPARENT-} __sb_otel_trace= __sb_otel_flags= __sb_otel_began=
  if [[ $__sb_otel_traceparent =~ '^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$' ]]; then
    __sb_otel_trace=$match[1] __sb_otel_flags=$match[2]
  fi
  printf 'v\tzsh\t%s\n' "$ZSH_VERSION" >>"$__sb_otel_spool"
  typeset -ga preexec_functions precmd_functions
  (( ${preexec_functions[(Ie)__sb_otel_preexec]} )) || preexec_functions+=(__sb_otel_preexec)
  (( ${precmd_functions[(Ie)__sb_otel_precmd]} )) || precmd_functions=(__sb_otel_precmd "${precmd_functions[@]}")
}

# exit, logout and bye: the builtins, noting whether a status was given (alone: a normal end)
exit() {
  local __sb_otel_rc=$?
  __sb_otel_exit_args=$# && __sb_otel_stand_in
  builtin exit "${@:-$__sb_otel_rc}"
  __sb_otel_rc=$? && __sb_otel_stand_down
  return "$__sb_otel_rc"
}
logout() {
  local __sb_otel_rc=$?
  __sb_otel_exit_args=$# && __sb_otel_stand_in
  builtin logout "${@:-$__sb_otel_rc}"
  __sb_otel_rc=$? && __sb_otel_stand_down
  return "$__sb_otel_rc"
}
bye() {
  local __sb_otel_rc=$?
  __sb_otel_exit_args=$# && __sb_otel_stand_in
  builtin bye "${@:-$__sb_otel_rc}"
  __sb_otel_rc=$? && __sb_otel_stand_down
  return "$__sb_otel_rc"
}

__sb_otel_begin() {  # pid store component session traceparent sb-otel spool-folder mode: adopt `init`'s session
  if [[ ${__sb_otel_pid-} == "$$" ]]; then  # evaluated again in this shell: it keeps its session
    [[ -z $4 || $4 == "${__sb_otel_session-}" ]] || "$6" emit end "$4" --store "$2" >/dev/null 2>&1
    return 0
  fi
  local __sb_otel_new=$4 __sb_otel_lines
  if [[ $1 != "$$" ]]; then  # started for another process (a subshell, a saved copy): start our own
    [[ -z $4 ]] || "$6" emit end "$4" --store "$2" >/dev/null 2>&1
    __sb_otel_lines=$("$6" emit start --component "$3" --shell-type zsh --pid "$$" --store "$2") || return 0
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
  typeset -g __sb_otel_pid=$$ __sb_otel_session=$__sb_otel_new __sb_otel_store=$2 __sb_otel_bin=$6
  typeset -ga zshexit_functions
  (( ${zshexit_functions[(Ie)__sb_otel_zshexit]} )) || zshexit_functions+=(__sb_otel_zshexit)
  # HUP and TERM end the shell through zsh's own hangup, which runs every zshexit hook (an `exit` in a trap
  # runs none); the session reports the signal that came
  trap '__sb_otel_signal=129; trap - HUP; kill -HUP $$' HUP
  trap '__sb_otel_signal=143; trap - HUP; kill -HUP $$' TERM
  __sb_otel_commands "${7-}" "${8-p}"
}
