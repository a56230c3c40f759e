"""The generator's recording modes, named here (no heavy imports) so the command line can offer them."""

#: standard: the generator's own habits; diverse: more residents whose names partners record
#: inconsistently, with their naming conventions; hard: diverse, households as they are and the
#: habits of synthetic/adversary.py.
RECORDING_MODES = ("standard", "diverse", "hard")

#: How the partners' files are cut: yearly (the default: few files, quick to load in tests) or
#: monthly, as the spec says partners send them, so that a month's run holds one new file a source.
FILE_PERIODS = ("yearly", "monthly")
