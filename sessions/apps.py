from django.apps import AppConfig


class TerminalSessionsConfig(AppConfig):
    """Terminal API sessions; labelled apart because django.contrib.sessions owns `sessions`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "sessions"
    label = "terminal_sessions"
    verbose_name = "Terminal API sessions"

    def ready(self) -> None:
        from payments.services import OPERATION_TYPE
        from sessions import services
        from sessions.models import OperationType, RequestStatus, TerminalRequest
        from terminals import occupancy

        # A display or input request in flight keeps its terminal busy, and an active session
        # puts up the waiting screen of the requests forwarded to it (terminals/occupancy.py).
        occupancy.register_in_flight(
            occupancy.InFlightKind(
                key="inFlightRequestId",
                model=TerminalRequest,
                id_field="request_id",
                status_field="status",
                statuses=(RequestStatus.IN_PROGRESS.value,),
            )
        )
        occupancy.register_waiting_screens(
            occupancy.WaitingScreens(
                screen=services.session_request_forwarded,
                active_subquery=services.active_session_subquery,
            )
        )
        assert OPERATION_TYPE == OperationType.PAYMENT, "payments names its operation type"
