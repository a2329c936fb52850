"""One module per DVC stage; dvc.yaml names the same stages, and `loramerge <module>` runs one.

A stage module is its command: `HELP` (its line in `loramerge --help`), `ARGUMENTS` (its options, as
`argparse.add_argument` takes them, literals only) and `run(params, **options)`, which returns what it wrote.
A stage that loads no model says `MODEL_FREE = True`: the CLI then skips checking `merge.methods` before it (the
check imports every method, so torch and PEFT, seconds that a stage reading CSV or JSON files would pay for nothing).
The CLI reads these constants from the source without importing the module (a stage imports torch;
`--help` should not wait for it), so a new stage is this module and its dvc.yaml entry.
"""
