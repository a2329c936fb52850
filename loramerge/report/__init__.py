"""What the `report` stage computes and shows, below the stage itself (loramerge/stages/report.py).

One module per concern: `tables` (metrics files read into frames, and the tables computed from them),
`statistics` (task similarity vs merge retention), `figures` (matplotlib), `provenance` (how the run was made),
`results` (everything computed once, and the numbers handed to DVC and MLflow), `document` (blocks and the
markdown/HTML renderers) and `sections` (what the report says, in order). Nothing here imports a stage.
"""
