import json
import time


def main(who="world"):
    print(f"hello, {who}")


def fetch_catalogue():
    catalogue = {"fetched_at": time.time(), "items": ["a", "b", "c"]}
    print(json.dumps(catalogue))
