# bash completion for pacsrv. pacsrv runs pacman once, so its arguments are pacman's: pacman's
# own completion does the work, plus pacsrv's own options.
_pacsrv() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    case ${COMP_WORDS[1]-} in
        --include-conf)
            mapfile -t COMPREPLY < <(compgen -W "--in-place" -- "$cur"; compgen -f -- "$cur")
            return
            ;;
        --clean-download-dirs)
            mapfile -t COMPREPLY < <(compgen -W "--config" -- "$cur"; compgen -f -- "$cur")
            return
            ;;
    esac
    # pacman's completion, loaded on demand as bash-completion loads it for pacman itself.
    if ! declare -F _pacman >/dev/null && declare -F _completion_loader >/dev/null; then
        _completion_loader pacman
    fi
    COMPREPLY=()
    if declare -F _pacman >/dev/null; then
        _pacman "$@"
    fi
    if [[ $COMP_CWORD -eq 1 ]]; then
        local own
        mapfile -t own < <(compgen -W "--include-conf --clean-download-dirs --summary --totals" -- "$cur")
        COMPREPLY+=("${own[@]}")
    fi
}
complete -F _pacsrv pacsrv
