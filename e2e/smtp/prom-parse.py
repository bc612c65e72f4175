#!/usr/bin/env python3
"""Parses Prometheus text exposition from stdin with the reference Python client's parser and
prints every sample as JSON: {"name{label=value,...}": value}, labels sorted.
Usage: curl .../metrics | prom-parse.py"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        out[f"{sample.name}{{{labels}}}"] = sample.value
print(json.dumps(out))
