from services.auth.config import AuthSettings
from services.auth.server import AuthServer
from services.common.grpc_server import run_service
from services.common.settings import load_or_exit

settings = load_or_exit(AuthSettings)
run_service(lambda: AuthServer(settings), settings)
