#!/usr/bin/env python3
"""Demo data for notify: subscriptions that put the tasks service's reminders
(due soon, overdue, escalated) and new tasks into the in-app inbox of the
people concerned, and pairing changes into the inbox too. Loaded before the
tasks demo, so the tasks it creates already reach inboxes. Idempotent: a
subscription with the same name is not created twice."""
import sys

from common import Client, RpcError

NOTIFY = Client("notify")

SUBSCRIPTIONS = [
    ("任务提醒（站内信）", "bangfu.tasks.task.", ["inbox"]),
    ("结对变更（站内信）", "bangfu.registry.pairing.", ["inbox"]),
]


def main():
    have = {s["name"] for s in NOTIFY.call("subscription.list", {})["items"]}
    made = 0
    for name, prefix, channels in SUBSCRIPTIONS:
        if name in have:
            continue
        NOTIFY.call("subscription.create", {"name": name, "type_prefix": prefix,
                                            "channels": channels, "locale": "zh-CN"})
        made += 1
    print("notify demo: %d subscriptions (%d new)" % (len(SUBSCRIPTIONS), made))


if __name__ == "__main__":
    try:
        main()
    except RpcError as e:
        sys.exit("notify demo failed: %s" % e)
