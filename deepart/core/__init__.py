"""The base every other package stands on: the config and its checks, errors, the device runtime, distributed
helpers, fault injection for the kill tests and the files of a run dir. Imports nothing else of deepart."""
