#!/bin/sh
# Create the system user, (re)build the virtualenv from the packaged wheelhouse, reload units.
# Runs on install and on upgrade (deb: configure; rpm: $1 = 1 or 2). Services are not
# enabled here: the operator chooses which daemons this machine runs.
set -eu

if ! getent passwd lab >/dev/null 2>&1; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    useradd --system --user-group --home-dir /var/lib/lab --no-create-home \
        --shell "$nologin" --comment "labctl daemons" lab
fi

# --clear: an upgrade replaces the whole environment, so no stale dependency survives.
python3 -m venv --clear /opt/labctl
/opt/labctl/bin/python -m pip install --quiet --no-index --no-cache-dir \
    --find-links /usr/share/labctl/wheels "labctl[postgres]"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # Restart what was running so it picks up the new code.
    for unit in labd lab-bastion lab-agent; do
        systemctl try-restart "$unit.service" >/dev/null 2>&1 || true
    done
fi
exit 0
