"""Everything the command line shows a person: tables, progress, result lines, and JSON as
`--json` prints it. The commands compute; these modules only draw, so that any caller (the
demo, tests) can draw the same report the same way."""
