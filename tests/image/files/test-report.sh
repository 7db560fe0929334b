#!/bin/sh
# TEST ONLY (see ddc-test-report.service): print the state the boot test
# checks to the console, one "DDC-REPORT: key: value" line each, then power off.
r() { echo "DDC-REPORT: $*"; }
role=$(cat /etc/ddc/role 2>/dev/null | tr -d ' \r\n')
role=${role:-egress}
unit="ddc@$role.service"

# Startup finished (this unit is Type=simple, so it does not hold it up).
state=$(systemctl is-system-running --wait 2>&1)
r "begin: ok"
r "system-state: $state"
r "multi-user: $(systemctl is-active multi-user.target)"
r "firstboot: $(systemctl is-active ddc-firstboot.service) $(systemctl show -p Result --value ddc-firstboot.service)"
# The daemon: active, and WATCHDOG=1 arriving (the timestamp moves on).
# Wait for it only when ddc-firstboot enabled it (a refused config never starts).
i=0
while systemctl is-enabled -q "$unit" 2>/dev/null && [ $i -lt 120 ] &&
    ! systemctl is-active -q "$unit"; do
    sleep 1
    i=$((i + 1))
done
r "is-active $unit: $(systemctl is-active "$unit")"
r "is-enabled $unit: $(systemctl is-enabled "$unit" 2>&1)"
sleep 6
r "watchdog-1: $(systemctl show -p WatchdogTimestampMonotonic --value "$unit")"
sleep 8
r "watchdog-2: $(systemctl show -p WatchdogTimestampMonotonic --value "$unit")"
r "watchdog-usec: $(systemctl show -p WatchdogUSec --value "$unit")"
r "nrestarts: $(systemctl show -p NRestarts --value "$unit")"
r "mainpid-user: $(ps -o user= -p "$(systemctl show -p MainPID --value "$unit")" 2>/dev/null)"
r "thp: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
r "thp-defrag: $(cat /sys/kernel/mm/transparent_hugepage/defrag)"
r "ddc-thp: $(systemctl is-active ddc-thp.service)"
r "cmdline: $(cat /proc/cmdline)"
r "failed-count: $(systemctl --failed --no-legend --plain | grep -c .)"
systemctl --failed --no-legend --plain | while read -r line; do r "failed: $line"; done
r "vector-dropin: $(ls /etc/systemd/system/vector.service.d/ 2>&1 | tr '\n' ' ')"
r "vector-config: $(ls /etc/vector/ 2>&1 | tr '\n' ' ')"
r "vector-unit: $(systemctl show -p LoadState --value vector.service) $(systemctl show -p FragmentPath --value vector.service)"
for f in /etc/ddc /etc/ddc/*; do r "etc-ddc: $(stat -c '%n %U:%G %a' "$f")"; done
r "boot-ddc-left: $(find /boot/efi/ddc /boot/firmware/ddc -type f 2>/dev/null | tr '\n' ' ')"
r "ssh: $(systemctl is-enabled ssh.service 2>&1) $(systemctl is-active ssh.service 2>&1)"
r "ssh-host-keys: $(ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l)"
r "root-password: $(awk -F: '$1 == "root" { print $2 }' /etc/shadow)"
r "root-keys: $(grep -c . /root/.ssh/authorized_keys 2>/dev/null || echo 0)"
r "sysctl-rmem_max: $(cat /proc/sys/net/core/rmem_max)"
r "root-size: $(df -B1 --output=size / | tail -1 | tr -d ' ')"
r "status-file: $(cat /run/ddc/$role/status.json 2>/dev/null | head -c 300 | tr '\n' ' ')"
journalctl -b -o cat -u ddc-firstboot.service | while IFS= read -r line; do r "journal-firstboot: $line"; done
journalctl -b -o cat -u "$unit" | tail -n 15 | while IFS= read -r line; do r "journal-ddc: $line"; done
r "end: ok"
systemctl poweroff
