"""Training code for the models this project makes itself; the plugin never imports it at
run time (the trained weights ship with the model, under ``models/``)."""
