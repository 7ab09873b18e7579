"""Generate admin data of a given size for `make bench-policy`.

N groups (gids 100000..) and N exports (/nfs/bench/e<i>, each with a rule
granting one group rw and the next one ro), laid out as policies/data is
(<out>/data/wsc/{groups,levels,exports}/data.json), plus <out>/input.json: a typical
submit by a user in 8 of those groups with three mounts (two group grants
through different groups, one through the project group) and a '..'-free path
of ordinary depth. The decision it asks for is allowed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIRST_GID = 100_000
USER_GROUPS = 8
LEVELS = {
    "viewer": {
        "submit": False, "view_others": True, "act_on_others": False,
        "max_systems": 0, "max_priority": 0, "default_priority": 0,
    },
    "member": {
        "submit": True, "view_others": True, "act_on_others": False,
        "max_systems": 4, "max_priority": 5, "default_priority": 3,
    },
    "admin": {
        "submit": True, "view_others": True, "act_on_others": True,
        "max_systems": 16, "max_priority": 10, "default_priority": 5,
    },
}  # fmt: skip


def generate(n: int) -> tuple[dict[str, object], dict[str, object]]:
    """(data by key, input) for n groups and n exports."""
    groups = {
        str(FIRST_GID + i): {"name": f"g{i}", "default_level": "member", "users": {"1001": "admin"}}
        for i in range(n)
    }
    exports = {
        f"/nfs/bench/e{i}": {
            "name": f"e{i}",
            "server": f"nfs{i % 8}.cluster.local",
            "export": f"/srv/e{i}",
            "pvc": f"nfs-e{i}",
            "rules": {
                "data": {"groups": {f"g{i}": "rw", f"g{(i + 1) % n}": "ro"}},
                ".": {"groups": {f"g{i}": "ro"}},
            },
        }
        for i in range(n)
    }
    # The user's groups are spread over the whole range (first, middle, last).
    picks = sorted({(k * (n - 1)) // (USER_GROUPS - 1) for k in range(USER_GROUPS)})
    user_gids = [FIRST_GID + i for i in picks]
    last, mid, first = picks[-1], picks[len(picks) // 2], picks[0]
    request = {
        "project": f"g{first}",
        "mounts": [
            {"path": f"/nfs/bench/e{first}/data/run/2026/11/checkpoints", "mode": "rw"},
            {"path": f"/nfs/bench/e{mid}/data/shared/", "mode": "rw"},
            {"path": f"/nfs/bench/e{last}/./readme", "mode": "ro"},
        ],
        "resources": {"systems": 2},
        "priority": 4,
    }
    identity = {
        "uid": 1001, "gid": 1001, "groups": user_gids,
        "user": "alice", "host": "login1", "realm": "bench",
    }  # fmt: skip
    data = {"groups": groups, "levels": LEVELS, "exports": exports}
    return data, {"identity": identity, "action": "submit", "request": request}


def variants(submit: dict[str, object]) -> dict[str, dict[str, object]]:
    """The benchmarked decisions: the 3-mount submit, a 1-mount one, an admin's cancel."""
    request = dict(submit["request"])  # type: ignore[arg-type]
    one_mount = {**submit, "request": {**request, "mounts": request["mounts"][:1]}}
    cancel = {
        "identity": submit["identity"],
        "action": "cancel",
        "request": {"job": {"owner_uid": 2002, "project": request["project"]}},
    }
    return {"submit-3-mounts": submit, "submit-1-mount": one_mount, "cancel-other": cancel}


def write(out: Path, n: int) -> None:
    data, request = generate(n)
    for key, value in data.items():
        path = out / "data" / "wsc" / key / "data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    for name, variant in variants(request).items():
        (out / f"{name}.json").write_text(json.dumps(variant, indent=2))
    (out / "input.json").write_text(json.dumps(request, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of groups and of exports")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    write(args.out, args.n)


if __name__ == "__main__":
    main()
