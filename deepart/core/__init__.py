"""The base every other package stands on: the config and its checks, errors, the device runtime,
distributed helpers and fault injection for the kill tests. Imports nothing else of deepart."""
