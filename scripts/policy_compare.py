"""Compare data.wsc.authz.decision of two policy versions with the real OPA.

    python3 scripts/policy_compare.py --old OLD/wsc --new policies/wsc [-n 5000] [--seed 1]

OLD and NEW are directories of Rego (``policies/wsc`` of two checkouts; test
files are ignored). Both are evaluated by ``opa eval`` on the same inputs,
against the same admin data:

* ``-n`` random inputs, spread over a few generated admin data sets (groups
  with per-user levels and per-group limits, nested exports, group and owner
  rules, a root export in one of them). The generator aims at the edges the
  policy decides: malformed and root ids, oversized group lists, unknown
  actions, projects the caller is not in, limits just below and above, path
  tricks ('.', '//', '..', '%', non-ASCII), duplicate mounts, the
  supplementary-group cap, and job actions on own and others' jobs.
* every table case of the decision's tests (``data.wsc.authz_test.cases``,
  with the tests' own fixture data), taken from ``--cases-from`` directories
  (default: the parent directories of OLD and NEW, whose tests compile
  against their own policy).

Prints the figures and every mismatching input (the first few in full), and
exits 1 on any mismatch, 0 when every decision is identical.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUERY = "data.wsc.authz.decision"
INPUTS_KEY = "policy_compare_inputs"

# --- random admin data --------------------------------------------------------------

LEVELS = {
    "viewer": {"submit": False, "view_others": True, "act_on_others": False,
               "max_systems": 0, "max_priority": 0, "default_priority": 0},
    "member": {"submit": True, "view_others": True, "act_on_others": False,
               "max_systems": 4, "max_priority": 5, "default_priority": 3},
    "admin": {"submit": True, "view_others": True, "act_on_others": True,
              "max_systems": 16, "max_priority": 10, "default_priority": 5},
    "guest": {"submit": False, "view_others": False, "act_on_others": False,
              "max_systems": 0, "max_priority": 0, "default_priority": 0},
    # a default above its own ceiling: a submit naming no priority is denied
    "lopsided": {"submit": True, "view_others": False, "act_on_others": False,
                 "max_systems": 2, "max_priority": 2, "default_priority": 4},
}  # fmt: skip
UIDS = list(range(1001, 1011))
GROUP_GIDS = list(range(2000, 2030))
MANY_GIDS = list(range(3000, 3020))  # one small group per directory of /nfs/many


def gen_data(rng: random.Random, root_export: bool) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for gid in GROUP_GIDS:
        group: dict[str, Any] = {
            "name": f"g{gid}",
            "default_level": rng.choice(["member", "member", "viewer", "admin", "guest", "lopsided"]),
        }
        if rng.random() < 0.5:
            group["users"] = {str(u): rng.choice(list(LEVELS)) for u in rng.sample(UIDS, rng.randint(1, 4))}
        if rng.random() < 0.3:
            group["limits"] = {
                rng.choice(["member", "admin"]): {
                    "max_systems": rng.randint(0, 6),
                    "max_priority": rng.randint(0, 8),
                    "default_priority": rng.randint(0, 4),
                }
            }
        groups[str(gid)] = group
    groups["2099"] = {"name": "broken", "default_level": "superuser"}  # a level nobody defined
    for gid in MANY_GIDS:
        groups[str(gid)] = {"name": f"m{gid}", "default_level": "member"}
    names = [g["name"] for g in groups.values()]

    def grants() -> dict[str, str]:
        return {n: rng.choice(["ro", "rw"]) for n in rng.sample(names[:30], rng.randint(0, 4))}

    exports: dict[str, Any] = {}
    for k in range(8):
        mount = f"/nfs/e{k}"
        rules: dict[str, Any] = {}
        if rng.random() < 0.6:
            rules["."] = {"groups": grants()}
        for key in ("a", "a/b", "b", "c/d", "people"):
            if rng.random() < 0.5:
                rules[key] = {"groups": grants()}
        if rng.random() < 0.4:
            rules[rng.choice([".", "people", "a"])] = {
                "owner": {"mode": rng.choice(["ro", "rw"]), "by": rng.choice(["uid", "user"])}
            }
        exports[mount] = {"name": f"e{k}", "server": "nfs", "export": f"/srv/e{k}", "pvc": f"nfs-e{k}",
                          "rules": rules}  # fmt: skip
    exports["/nfs/e0/nested"] = {  # an export inside another: the longer mount path wins
        "name": "nested", "server": "nfs", "export": "/srv/nested", "pvc": "nfs-nested",
        "rules": {".": {"groups": grants()}, "x": {"groups": grants()}},
    }  # fmt: skip
    exports["/nfs/home"] = {"name": "home", "server": "nfs", "export": "/srv/home", "pvc": "nfs-home",
                            "rules": {".": {"owner": {"mode": "rw", "by": "uid"}}}}  # fmt: skip
    exports["/nfs/many"] = {"name": "many", "server": "nfs", "export": "/srv/many", "pvc": "nfs-many",
                            "rules": {f"m{g}": {"groups": {f"m{g}": "ro"}} for g in MANY_GIDS}}  # fmt: skip
    exports["/nfs/norules"] = {"name": "norules", "server": "nfs", "export": "/srv/n", "pvc": "nfs-n"}
    if root_export:
        exports["/"] = {"name": "root", "server": "nfs", "export": "/srv", "pvc": "nfs-root",
                        "rules": {".": {"groups": grants()}, "etc": {"groups": {}}}}  # fmt: skip
    return {"groups": groups, "levels": LEVELS, "exports": exports}


# --- random inputs ------------------------------------------------------------------

ODD_IDS: list[Any] = [0, -1, 1002.0, 1002.5, "1002", None, 4294967294, 4294967295, 2.001e3, True]


def pick_id(rng: random.Random, usual: list[int]) -> Any:
    return rng.choice(ODD_IDS) if rng.random() < 0.08 else rng.choice(usual)


def gen_identity(rng: random.Random) -> Any:
    if rng.random() < 0.01:
        return rng.choice([None, "alice", {}])
    uid = pick_id(rng, UIDS)
    ident: dict[str, Any] = {"uid": uid, "gid": pick_id(rng, UIDS), "user": f"u{uid}", "host": "login1"}
    r = rng.random()
    if r < 0.03:
        ident["groups"] = rng.choice(["2001", None, {"a": 1}, [2001, "2002"], [2001, 0], [2001, -5]])
    elif r < 0.04:
        ident["groups"] = list(range(5000, 5000 + rng.choice([1023, 1024, 1025, 1100]))) + [2001, 2002]
    elif r < 0.10:
        ident["groups"] = rng.sample(GROUP_GIDS, 2) + MANY_GIDS  # in every small group
    else:
        ident["groups"] = rng.sample(GROUP_GIDS + [2099, 77777], rng.randint(0, 8))
    for field in ("uid", "gid", "groups"):
        if rng.random() < 0.01:
            ident.pop(field, None)
    return ident


def gen_path(rng: random.Random, data: dict[str, Any], ident: Any) -> Any:
    if rng.random() < 0.02:
        return rng.choice([7, None, ["/nfs/e1"], ""])
    mount = rng.choice(list(data["exports"]))
    rules = list(data["exports"][mount].get("rules", {})) or ["."]
    rule = rng.choice(rules)
    uid = ident.get("uid") if isinstance(ident, dict) else None
    parts = [mount.rstrip("/")]
    if rule != ".":
        parts.append(rule)
    r = rng.random()
    if r < 0.3:
        parts.append(str(uid) if rng.random() < 0.7 else str(rng.choice(UIDS)))
    elif r < 0.4:
        parts.append(f"u{uid}")
    for _ in range(rng.randint(0, 3)):
        parts.append(rng.choice(["x", "data", "run", "...", ".hidden", "..x", "2026"]))
    path = "/".join(parts) or "/"
    r = rng.random()
    if r < 0.05:
        path = path.replace("/", "//", 1)
    elif r < 0.10:
        path += "/"
    elif r < 0.14:
        path += "/."
    elif r < 0.20:
        path = path + "/../" + rng.choice(["x", "..", "../..", "a/b", "../../../etc"])
    elif r < 0.22:
        path = "/nfs/.." + "/.." * rng.randint(0, 2) + "/etc"
    elif r < 0.24:
        path = path + rng.choice(["%2e%2e", "\u2025", "\uff0f", " x", "\\..", "\x00"])
    elif r < 0.25:
        path = path.lstrip("/")
    elif r < 0.26:
        path = path + "/" + "a" * rng.choice([255, 256, 1020])
    elif r < 0.27:
        path = path + "/a" * rng.choice([55, 70])
    elif r < 0.29:
        path = rng.choice(["/etc/passwd", "/", "/nfs", "/nfs/e1X/a", "/opt/x"])
    return path


def gen_mount(rng: random.Random, data: dict[str, Any], ident: Any) -> Any:
    r = rng.random()
    if r < 0.01:
        return rng.choice(["/nfs/e1", 5, None])
    mount: dict[str, Any] = {"path": gen_path(rng, data, ident), "mode": rng.choice(["ro", "ro", "rw"])}
    if r < 0.03:
        mount["mode"] = rng.choice(["rwx", None, "RO"])
    elif r < 0.04:
        del mount["mode"]
    elif r < 0.05:
        del mount["path"]
    return mount


def gen_mounts(rng: random.Random, data: dict[str, Any], ident: Any) -> Any:
    r = rng.random()
    if r < 0.02:
        return rng.choice(["/nfs/e1", None, {"a": {"path": "/nfs/e1", "mode": "ro"}}, 3])
    if r < 0.10:  # the supplementary-group cap and the mount-count limit
        n = rng.choice([14, 15, 16, 17, 19])
        mounts = [{"path": f"/nfs/many/m{g}", "mode": "ro"} for g in MANY_GIDS[:n]]
        if rng.random() < 0.3:
            mounts += [{"path": f"/nfs/home/{ident.get('uid') if isinstance(ident, dict) else 1}/d{k}",
                        "mode": "rw"} for k in range(rng.choice([10, 13, 16]))]  # fmt: skip
        return mounts
    mounts = [gen_mount(rng, data, ident) for _ in range(rng.choice([0, 1, 1, 2, 3, 5]))]
    if mounts and rng.random() < 0.05:
        mounts.append(dict(mounts[0]) if isinstance(mounts[0], dict) else mounts[0])  # a duplicate
    return mounts


def group_name(rng: random.Random, data: dict[str, Any], ident: Any) -> Any:
    r = rng.random()
    groups = ident.get("groups") if isinstance(ident, dict) else None
    if r < 0.65 and isinstance(groups, list) and groups:
        g = rng.choice(groups)
        entry = data["groups"].get(str(g)) if isinstance(g, int) else None
        if entry:
            return entry["name"]
    if r < 0.9:
        return rng.choice([g["name"] for g in data["groups"].values()])
    return rng.choice([None, 5, "", "nosuchgroup"])


def gen_number(rng: random.Random, lo: int, hi: int) -> Any:
    r = rng.random()
    if r < 0.1:
        return rng.choice([-1, 1.5, "2", None, 0, 1e10, True])
    return rng.randint(lo, hi)


def gen_input(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    ident = gen_identity(rng)
    action = rng.choices(
        ["submit", "get", "cancel", "set_priority", "list", "delete", None],
        weights=[50, 11, 11, 11, 12, 3, 2],
    )[0]
    doc: dict[str, Any] = {"identity": ident}
    if action is not None:
        doc["action"] = action
    if rng.random() < 0.01:
        doc["request"] = rng.choice(["x", None, []])
        return doc
    request: dict[str, Any] = {}
    if action == "submit" or (action in ("delete", None) and rng.random() < 0.5):
        if rng.random() < 0.95:
            request["project"] = group_name(rng, data, ident)
        request["mounts"] = gen_mounts(rng, data, ident)
        if rng.random() < 0.7:
            request["resources"] = {"systems": gen_number(rng, 1, 6)} if rng.random() < 0.97 else 4
        if rng.random() < 0.5:
            request["priority"] = gen_number(rng, 0, 11)
    elif action in ("get", "cancel", "set_priority"):
        uid = ident.get("uid") if isinstance(ident, dict) else None
        job: dict[str, Any] = {
            "owner_uid": uid if rng.random() < 0.4 else pick_id(rng, UIDS),
            "project": group_name(rng, data, ident),
        }
        if rng.random() < 0.03:
            job.pop(rng.choice(["owner_uid", "project"]))
        request["job"] = job
        if action == "set_priority" and rng.random() < 0.9:
            request["priority"] = gen_number(rng, 0, 11)
    doc["request"] = request
    return doc


# --- evaluation ---------------------------------------------------------------------


def write_data(directory: Path, data: dict[str, Any]) -> None:
    for key in ("groups", "levels", "exports"):
        path = directory / "wsc" / key / "data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data[key]))


def decisions(opa: str, policy: Path, data_dir: Path, inputs: list[Any], work: Path) -> list[Any]:
    """data.wsc.authz.decision of policy for every input, in one opa eval."""
    inputs_file = work / "inputs.json"
    inputs_file.write_text(json.dumps({INPUTS_KEY: inputs}))
    query = f"[d | some x in data.{INPUTS_KEY}; d := {QUERY} with input as x]"
    out = subprocess.run(
        [opa, "eval", "--format", "json", "--ignore", "*_test.rego",
         "--data", str(policy), "--data", str(data_dir), "--data", str(inputs_file), query],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    value = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    if len(value) != len(inputs):
        raise SystemExit(f"{policy}: {len(value)} decisions for {len(inputs)} inputs (one was undefined)")
    return value


def test_cases(opa: str, policy_root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """({name: input}, fixture data) of the decision's table tests under policy_root."""
    query = (
        '{"cases": {name: tc.input | some name, tc in data.wsc.authz_test.cases}, '
        '"groups": data.wsc.authz_test.groups, "levels": data.wsc.authz_test.levels, '
        '"exports": data.wsc.authz_test.exports}'
    )
    out = subprocess.run(
        [opa, "eval", "--format", "json", "--ignore", "samples", "--data", str(policy_root), query],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    value = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return value.pop("cases"), value


def report(label: str, inputs: list[Any], old: list[Any], new: list[Any], shown: int) -> int:
    bad = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    allowed = sum(1 for d in new if d.get("allow"))
    print(f"{label}: {len(inputs)} inputs, {allowed} allowed, {len(bad)} mismatches")
    for i in bad[:shown]:
        print(f"  input: {json.dumps(inputs[i])}")
        print(f"    old: {json.dumps(old[i], sort_keys=True)}")
        print(f"    new: {json.dumps(new[i], sort_keys=True)}")
    return len(bad)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="Rego directory of the old policy (policies/wsc)")
    parser.add_argument("--new", type=Path, default=ROOT / "policies" / "wsc", help="Rego directory of the new one")
    parser.add_argument("-n", type=int, default=5000, help="random inputs (default 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--datasets", type=int, default=4, help="generated admin data sets the inputs spread over")
    parser.add_argument(
        "--cases-from", type=Path, action="append",
        help="policy directory whose data.wsc.authz_test.cases to replay (repeatable; "
        "default: the parents of --old and --new)",
    )  # fmt: skip
    parser.add_argument("--opa", default=str(ROOT / ".tools" / "bin" / "opa"))
    parser.add_argument("--show", type=int, default=5, help="mismatches printed in full per group")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    mismatches = 0
    total = 0
    with tempfile.TemporaryDirectory(prefix="policy-compare-") as tmp:
        work = Path(tmp)
        per_set = -(-args.n // args.datasets)
        for k in range(args.datasets):
            data = gen_data(rng, root_export=k == args.datasets - 1)
            data_dir = work / f"data{k}"
            write_data(data_dir, data)
            inputs = [gen_input(rng, data) for _ in range(min(per_set, args.n - total))]
            old = decisions(args.opa, args.old, data_dir, inputs, work)
            new = decisions(args.opa, args.new, data_dir, inputs, work)
            mismatches += report(f"random, data set {k}", inputs, old, new, args.show)
            total += len(inputs)

        cases: dict[str, Any] = {}
        fixture: dict[str, Any] = {}
        for root in args.cases_from or [args.old.parent, args.new.parent]:
            found, data = test_cases(args.opa, root)
            if fixture and data != fixture:
                raise SystemExit(f"{root}: the tests' fixture data differs from the other directory's")
            fixture = data
            cases.update(found)
        data_dir = work / "cases"
        write_data(data_dir, fixture)
        names = sorted(cases)
        inputs = [cases[name] for name in names]
        old = decisions(args.opa, args.old, data_dir, inputs, work)
        new = decisions(args.opa, args.new, data_dir, inputs, work)
        mismatches += report("test cases", inputs, old, new, args.show)
        total += len(inputs)

    print(f"total: {total} decisions compared, {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
