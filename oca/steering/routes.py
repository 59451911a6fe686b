"""The chosen mode applied to the kernel's routing, over netlink (pyroute2).

Ours, and only ours: routes of the origin prefixes in table ``[steering] table``, each
tagged with our own protocol number (``PROTO``), and one rule per prefix (``to PREFIX
lookup TABLE``, priority ``rule_priority``) that sends traffic to the origin through that
table. A mode with a path: each prefix ``via`` the path's gateway ``dev`` its device,
switched with ``route replace`` (atomic). ``isp-direct``: our routes are removed, so the
main table decides. ``reconcile()`` on start replaces what a crashed run left; ``clear()``
on a clean stop removes routes and rules. With *dry_run* nothing is changed: each change
is logged.

pyroute2 0.9 has no ``rule replace`` (and ``rule set`` does nothing): rules are added
when missing (EEXIST ignored) and deleted when present (ESRCH ignored).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("oca.steering")

PROTO = 199
"""Our routes' protocol number (``ip route ... proto 199``): free in iproute2's
rt_protos (which names 0-18, 42, 99 and 186-188), so ``ip route flush proto 199`` and a
``get_routes`` filter find exactly ours."""


class RouteError(Exception):
    """A netlink call failed (the device vanished, the gateway is unreachable)."""


class Routes:
    def __init__(self, prefixes: Iterable[str], table: int, priority: int,
                 dry_run: bool = False):
        self.prefixes = [ipaddress.ip_network(p) for p in prefixes]
        self.table = table
        self.priority = priority
        self.dry_run = dry_run
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    # -- what is there -----------------------------------------------------------------

    def installed(self) -> dict[str, tuple[str | None, str | None]]:
        """prefix -> (gateway, device name) of our routes in our table."""
        out = {}
        names = {link.get("index"): link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}
        for family in (2, 10):
            for r in self.ipr.get_routes(family=family, table=self.table):
                if r.get("proto") != PROTO:
                    continue
                dst = f"{r.get_attr('RTA_DST')}/{r.get('dst_len')}"
                out[str(ipaddress.ip_network(dst))] = (r.get_attr("RTA_GATEWAY"),
                                                       names.get(r.get_attr("RTA_OIF")))
        return out

    def rules(self) -> set[str]:
        """The prefixes our rules send to our table (at our priority)."""
        out = set()
        for family in (2, 10):
            for rule in self.ipr.get_rules(family=family):
                if rule.get_attr("FRA_TABLE") == self.table and \
                        rule.get_attr("FRA_PRIORITY") == self.priority and \
                        rule.get_attr("FRA_DST") is not None:
                    out.add(str(ipaddress.ip_network(
                        f"{rule.get_attr('FRA_DST')}/{rule.get('dst_len')}")))
        return out

    # -- changes -----------------------------------------------------------------------

    def apply(self, gateway: str | None, device: str | None) -> None:
        """Route every prefix via *gateway* on *device*; None: remove ours (isp-direct)."""
        if gateway is None:
            self._flush()
            return
        try:
            oif = self.ipr.link_lookup(ifname=device)
        except NetlinkError as e:
            raise RouteError(f"device {device}: {e}") from None
        if not oif:
            raise RouteError(f"device {device} does not exist")
        for net in self.prefixes:
            if self.dry_run:
                log.info("steering (dry run): route replace %s via %s dev %s table %d "
                         "proto %d", net, gateway, device, self.table, PROTO)
                continue
            try:
                self.ipr.route("replace", dst=str(net), gateway=gateway, oif=oif[0],
                               table=self.table, proto=PROTO,
                               family=10 if net.version == 6 else 2)
            except NetlinkError as e:
                raise RouteError(f"route {net} via {gateway} dev {device}: "
                                 f"{e.args[1] if len(e.args) > 1 else e}") from None
        self._ensure_rules()

    def reconcile(self) -> None:
        """On start: our routes for prefixes no longer configured go; rules are made."""
        wanted = {str(n) for n in self.prefixes}
        for prefix in self.installed():
            if prefix not in wanted:
                self._delete_route(prefix)
        for prefix in self.rules() - wanted:
            self._delete_rule(ipaddress.ip_network(prefix))
        self._ensure_rules()

    def clear(self) -> None:
        """On a clean stop: our routes and rules go."""
        self._flush()
        for prefix in self.rules():
            self._delete_rule(ipaddress.ip_network(prefix))

    def _flush(self) -> None:
        for prefix in self.installed():
            self._delete_route(prefix)

    def _delete_route(self, prefix: str) -> None:
        net = ipaddress.ip_network(prefix)
        if self.dry_run:
            log.info("steering (dry run): route del %s table %d proto %d", net, self.table,
                     PROTO)
            return
        try:
            self.ipr.route("del", dst=str(net), table=self.table, proto=PROTO,
                           family=10 if net.version == 6 else 2)
        except NetlinkError as e:
            if e.code != errno.ESRCH:
                raise RouteError(f"route del {net}: {e}") from None

    def _ensure_rules(self) -> None:
        have = self.rules()
        for net in self.prefixes:
            if str(net) in have:
                continue
            if self.dry_run:
                log.info("steering (dry run): rule add to %s lookup %d priority %d", net,
                         self.table, self.priority)
                continue
            try:
                self.ipr.rule("add", dst=str(net.network_address), dst_len=net.prefixlen,
                              table=self.table, priority=self.priority,
                              family=10 if net.version == 6 else 2)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise RouteError(f"rule to {net} lookup {self.table}: {e}") from None

    def _delete_rule(self, net) -> None:
        if self.dry_run:
            log.info("steering (dry run): rule del to %s lookup %d", net, self.table)
            return
        try:
            self.ipr.rule("del", dst=str(net.network_address), dst_len=net.prefixlen,
                          table=self.table, priority=self.priority,
                          family=10 if net.version == 6 else 2)
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT):
                raise RouteError(f"rule del to {net}: {e}") from None
