"""Staff roles (contract section 8): Group.members gets a through model, Membership, with a role.

The table of the plain many-to-many (terminals_group_members) stays with its rows: only
Django's picture of it changes (SeparateDatabaseAndState, as in Django's documentation
"Changing a ManyToManyField to use a through model"). The new role column fills every
existing row with "manager", so every existing member keeps what they could do. The unique
(group, user) index of the auto-created table becomes a named constraint.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('terminals', '0002_device_ordering_without_join'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The table, its columns, foreign keys and indexes are already what the model says.
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Membership',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('group', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to='terminals.group')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'terminals_group_members',
                        'unique_together': {('group', 'user')},
                    },
                ),
                migrations.AlterField(
                    model_name='group',
                    name='members',
                    field=models.ManyToManyField(blank=True, related_name='stores', through='terminals.Membership', to=settings.AUTH_USER_MODEL),
                ),
            ],
        ),
        migrations.AddField(
            model_name='membership',
            name='role',
            field=models.CharField(choices=[('manager', 'Manager (everything: devices, refunds, webhooks)'), ('viewer', 'Viewer (reads pages, REST reads and exports; changes nothing)')], default='manager', max_length=16),
        ),
        migrations.AlterUniqueTogether(
            name='membership',
            unique_together=set(),
        ),
        migrations.AddConstraint(
            model_name='membership',
            constraint=models.UniqueConstraint(fields=('group', 'user'), name='membership_unique_group_user'),
        ),
    ]
