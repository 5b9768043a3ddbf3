from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from terminals import services
from terminals.models import Role


class Command(BaseCommand):
    help = (
        "Create or update a staff user who is a member of these stores (created if missing) "
        "with this role in each, and print a REST API token alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", action="append", required=True, dest="groups")
        parser.add_argument("--password")
        parser.add_argument(
            "--role",
            choices=Role.values,
            default=Role.MANAGER.value,
            help="manager (default): everything; viewer: reads pages, REST reads and exports, "
            "changes nothing",
        )

    def handle(self, *args, **options):
        try:
            user, token = services.staff_create_or_update(
                username=options["username"],
                group_slugs=options["groups"],
                password=options["password"],
                role=options["role"],
            )
        except ValidationError as refused:
            raise CommandError("The password is refused: " + " ".join(refused.messages)) from None
        self.stderr.write(
            f"Staff user {user.username} is a {options['role']} of "
            f"{', '.join(options['groups'])}. Token:"
        )
        self.stdout.write(token)
