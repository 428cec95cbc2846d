"""What every app of the portal shares on the web side: htmx helpers, the access policy, paging,
context processors, the admin site and template tags."""
