"""The mailer's policy pack. The rules are in policy/rules.py; policy/__main__.py, which constructs the
PolicyPack (and with it starts the analyzer server and blocks), is run by the Pulumi CLI only and
must never be imported."""
