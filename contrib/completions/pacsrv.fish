# fish completion for pacsrv. pacsrv runs pacman once, so its arguments are pacman's: pacman's
# own completion does the work, plus pacsrv's own options.
complete -c pacsrv -w pacman
complete -c pacsrv -n __fish_is_first_arg -l include-conf -r -F -d 'Print pacman.conf with the Include line of pacserve'
complete -c pacsrv -n '__fish_seen_argument -l include-conf' -l in-place -d 'Write the result back to the file'
complete -c pacsrv -n __fish_is_first_arg -l clean-download-dirs -d 'Remove the empty download directories pacman 7 left'
complete -c pacsrv -n __fish_is_first_arg -l summary -d "Print where the running transaction's packages came from"
complete -c pacsrv -n __fish_is_first_arg -l totals -d "Print where this host's packages came from, in total"
