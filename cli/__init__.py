"""The `mara` command line: it parses arguments and wires the layers below; no logic of its own."""
