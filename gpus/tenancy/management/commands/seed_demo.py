from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gpus.tenancy.services import DEMO_PASSWORD, DEMO_USERS, seed_demo_data


class Command(BaseCommand):
    help = "Create the demo tenants (tenant-acme, tenant-globex) and users (admin, alice, bob)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="Run even with DEBUG off (never in production)."
        )

    def handle(self, *args: object, force: bool = False, **options: object) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "Refusing to create demo users with known passwords while DEBUG is off "
                "(use --force if you really mean it)."
            )
        created = seed_demo_data()
        self.stdout.write(
            f"Demo data ready ({len(created)} new users). Logins, password {DEMO_PASSWORD!r}: "
            + ", ".join(username for username, *_ in DEMO_USERS)
        )
