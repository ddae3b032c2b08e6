"""The policy pack, as `pulumi preview --policy-pack policy` runs it: the rules in rules.py, nothing else.

Constructing PolicyPack starts the analyzer's gRPC server and blocks until the engine is done, so
nothing may import this module; the offline plan (review/) imports policy.rules directly. The CLI
runs this file with policy/ on sys.path, so rules is imported as a top-level module here.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pulumi_policy import PolicyPack  # noqa: E402

from rules import PACK_ENFORCEMENT, PACK_NAME, POLICIES  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    description="Least privilege, private ingress, secrets only through Secret Manager, private buckets, no SMTP port 25; prod keeps TTL and bounded scaling.",
    enforcement_level=PACK_ENFORCEMENT,
    policies=POLICIES,
)
