from django.core.management.base import BaseCommand

from terminals import services


class Command(BaseCommand):
    help = (
        "Create or update a staff user who is a member of these stores (created if missing) and "
        "print a REST API token alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", action="append", required=True, dest="groups")
        parser.add_argument("--password")

    def handle(self, *args, **options):
        user, token = services.staff_create_or_update(
            username=options["username"],
            group_slugs=options["groups"],
            password=options["password"],
        )
        self.stderr.write(
            f"Staff user {user.username} is a member of {', '.join(options['groups'])}. Token:"
        )
        self.stdout.write(token)
