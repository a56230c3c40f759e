"""Information governance: what each field is used for, the IG pack, the Algorithmic
Transparency Recording Standard record, and subject access across linked data."""
