#!/bin/sh
# Host 10.1.1.33 (party B): routes to the other parties' container
# subnets through their hosts, as the seed's `route add` lines, and
# forwarding between the bridges without address translation (each
# geops node advertises its container address, which must be reachable).
set -e
sysctl -qw net.ipv4.ip_forward=1
ip route replace 172.20.34.0/24 via 10.1.1.34
ip route replace 172.20.29.0/24 via 10.1.1.29
for net in 172.20.34.0/24 172.20.29.0/24 172.20.33.0/24; do
  iptables -C DOCKER-USER -s "$net" -j ACCEPT 2>/dev/null || iptables -I DOCKER-USER -s "$net" -j ACCEPT
  iptables -t nat -C POSTROUTING -s 172.20.33.0/24 -d "$net" -j RETURN 2>/dev/null || iptables -t nat -I POSTROUTING -s 172.20.33.0/24 -d "$net" -j RETURN
done
