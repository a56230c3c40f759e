"""The generator's recording modes, named here (no heavy imports) so the command line can offer them."""

#: standard: the generator's own habits; diverse: more residents whose names partners record
#: inconsistently, with their naming conventions; hard: diverse, households as they are and the
#: habits of synthetic/adversary.py.
RECORDING_MODES = ("standard", "diverse", "hard")
