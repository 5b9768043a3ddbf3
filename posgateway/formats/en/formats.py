"""Date formats for English pages (the admin's lists and forms): times to the second, in UTC
(``TIME_ZONE``), as the protocol and the exports give them; Django's own stop at the minute."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
