"""One module per DVC stage; dvc.yaml names the same stages, and `loramerge <module>` runs one.

A stage module is its command: `HELP` (its line in `loramerge --help`), `ARGUMENTS` (its options, as
`argparse.add_argument` takes them, literals only) and `run(params, **options)`, which returns what it wrote.
The CLI reads `HELP` and `ARGUMENTS` from the source without importing the module (a stage imports torch;
`--help` should not wait for it), so a new stage is this module and its dvc.yaml entry.
"""
