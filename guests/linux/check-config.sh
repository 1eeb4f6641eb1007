#!/bin/sh
# check-config.sh FRAGMENT DOTCONFIG: fail if an option the fragment sets did not reach .config
# (Kconfig drops a value silently when a dependency is missing).
set -eu
frag=$1 cfg=$2
bad=0
for line in $(grep -E '^CONFIG_[A-Za-z0-9_]+=' "$frag"); do
    key=${line%%=*} val=${line#*=}
    got=$(grep -E "^$key=|^# $key is not set" "$cfg" || true)
    if [ "$val" = n ]; then
        case "$got" in "" | "# $key is not set") continue ;; esac
    elif [ "$got" = "$line" ]; then
        continue
    fi
    echo "check-config: $line wanted, .config has '${got:-nothing}'" >&2
    bad=1
done
[ $bad -eq 0 ] && echo "check-config: all $(grep -cE '^CONFIG_' "$frag") options of $frag are in $cfg"
exit $bad
