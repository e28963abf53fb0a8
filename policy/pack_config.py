"""Write the `--policy-pack-config` JSON for a stack (each policy gets exactly the keys it reads).

    venv/bin/python policy/pack_config.py --production > policy/config/prod.json
    venv/bin/python policy/pack_config.py --production --cluster-ca-cert /etc/kubernetes/pki/ca.crt
    venv/bin/python policy/pack_config.py --denied-flag=--token-auth-file --denied-flag=--profiling

The committed policy/config/<stack>.json files are this script's output (a unit test checks that).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The pack's own modules, and the repository's components/ (contract.py, ca_files.py: standard library and
# cryptography only), which the pack shares with the program instead of copying.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))  # after site-packages: the repo's folders shadow nothing installed

from aggregation_policies import DEFAULT_DENIED_FLAGS, pack_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--production", action="store_true", help="the stack is production")
    parser.add_argument("--max-leaf-validity-hours", type=int, default=None)
    parser.add_argument("--cluster-ca-cert", help="PEM file of the cluster CA (compared with the aggregator CA)")
    parser.add_argument("--denied-flag", action="append", dest="denied_flags", metavar="--NAME",
                        help="a kube-apiserver flag the program must never set (repeat; replaces the default list "
                        f"{' '.join(DEFAULT_DENIED_FLAGS)})")
    args = parser.parse_args(argv)
    pem = None
    if args.cluster_ca_cert:
        with open(args.cluster_ca_cert, encoding="utf-8") as f:
            pem = f.read()
    doc = pack_config(
        production=args.production, max_leaf_validity_hours=args.max_leaf_validity_hours, cluster_ca_cert_pem=pem,
        denied_flags=DEFAULT_DENIED_FLAGS if args.denied_flags is None else args.denied_flags,
    )
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
