"""The dashboard: a read-only web page showing a reactor's servers, records and loop, live."""
