"""What a sweep is: configs composed from conf/ with Hydra, the search space read from the command line, and the
checks of user input (a value's type, a number's range). Pure: no Ray, no MLflow, no files written.

Imports: errors, hydra_internals, conf. Everything above may import it."""
