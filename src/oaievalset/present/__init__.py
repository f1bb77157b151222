"""What people see: the terminal, the tables, the JSON reports and the HTML page."""
