# English dates with 24-hour times: Django's "a.m." would double the full stop of a sentence
# ending on a date ("... as of Nov. 29, 2026, 4:30 a.m..").
DATETIME_FORMAT = "N j, Y, H:i"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
