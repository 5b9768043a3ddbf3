from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "payments"

    def ready(self) -> None:
        from payments.models import IN_FLIGHT_STATUSES, Transaction
        from terminals import occupancy

        # A payment in flight keeps its terminal busy (terminals/occupancy.py).
        occupancy.register_in_flight(
            occupancy.InFlightKind(
                key="inFlightTransactionId",
                model=Transaction,
                id_field="transaction_id",
                status_field="status",
                statuses=tuple(str(s) for s in IN_FLIGHT_STATUSES),
            )
        )
