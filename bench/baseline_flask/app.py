"""The Flask original: the auth service as a Flask developer would write it.

Flask-Login for cookie sessions, Flask-JWT-Extended for access + refresh tokens,
psycopg 3 with a psycopg_pool connection pool, argon2-cffi for passwords, served by
gunicorn sync workers. It reads keystile's `users` table (same rows, same argon2id
hashes) and keeps revoked refresh tokens in its own `baseline_token_blocklist`.
See README.md beside this file for why each choice was made.
"""

import os
from datetime import timedelta

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import Flask, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_current_user,
    get_jwt_identity,
    verify_jwt_in_request,
)
from flask_login import LoginManager, UserMixin, current_user, login_user
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
REFRESH_TOKEN_LIFETIME = timedelta(days=30)

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"],
    JWT_SECRET_KEY=os.environ["SECRET_KEY"],
    JWT_ACCESS_TOKEN_EXPIRES=ACCESS_TOKEN_LIFETIME,
    JWT_REFRESH_TOKEN_EXPIRES=REFRESH_TOKEN_LIFETIME,
    JWT_TOKEN_LOCATION=["headers", "json"],
    SESSION_COOKIE_HTTPONLY=True,
    SESSION_COOKIE_SAMESITE="Lax",
    SESSION_COOKIE_SECURE=os.environ.get("COOKIE_SECURE", "false") == "true",
)

# One small pool per gunicorn worker: a sync worker serves one request at a time.
pool = ConnectionPool(
    os.environ["DATABASE_URL"],
    min_size=1,
    max_size=int(os.environ.get("DB_POOL_SIZE", "2")),
    kwargs={"row_factory": dict_row},
    open=True,
)

hasher = argon2.PasswordHasher(
    time_cost=int(os.environ.get("ARGON2_TIME_COST", "2")),
    memory_cost=int(os.environ.get("ARGON2_MEMORY_KIB", "19456")),
    parallelism=int(os.environ.get("ARGON2_PARALLELISM", "1")),
)

login_manager = LoginManager(app)
jwt = JWTManager(app)


class User(UserMixin):
    def __init__(self, row):
        self.id = str(row["id"])
        self.email = row["email"]
        self.password_hash = row.get("password_hash")
        self.active = row["disabled_at"] is None

    @property
    def is_active(self):
        return self.active


def query_one(sql, *params):
    with pool.connection() as conn:
        return conn.execute(sql, params).fetchone()


def find_user_by_email(email):
    row = query_one(
        "SELECT id, email, password_hash, disabled_at FROM users WHERE lower(email) = lower(%s)",
        email,
    )
    return User(row) if row else None


def find_user_by_id(user_id):
    row = query_one("SELECT id, email, disabled_at FROM users WHERE id = %s", user_id)
    return User(row) if row else None


def check_password(user, password):
    try:
        return hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate():
    body = request.get_json(silent=True) or {}
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return None, (jsonify(error={"code": "validation_failed"}), 422)
    user = find_user_by_email(email)
    if user is None or not user.is_active or not check_password(user, password):
        return None, (jsonify(error={"code": "invalid_credentials"}), 401)
    return user, None


def token_pair(user):
    return {
        "access_token": create_access_token(identity=user.id),
        "refresh_token": create_refresh_token(identity=user.id),
        "token_type": "Bearer",
        "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


@login_manager.user_loader
def load_user(user_id):
    return find_user_by_id(user_id)


@jwt.user_lookup_loader
def load_jwt_user(_header, payload):
    user = find_user_by_id(payload["sub"])
    return user if user is not None and user.is_active else None


@jwt.token_in_blocklist_loader
def refresh_token_revoked(_header, payload):
    # Access tokens live 15 minutes and are not looked up; refresh tokens are.
    if payload["type"] != "refresh":
        return False
    row = query_one("SELECT 1 AS revoked FROM baseline_token_blocklist WHERE jti = %s", payload["jti"])
    return row is not None


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/v1/users")
def register():
    body = request.get_json(silent=True) or {}
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or len(password) < 8:
        return jsonify(error={"code": "validation_failed"}), 422
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) "
            "ON CONFLICT (lower(email)) DO NOTHING",
            (email, hasher.hash(password)),
        )
    return {"status": "accepted"}, 202


@app.post("/v1/sessions")
def login():
    user, error = authenticate()
    if error:
        return error
    login_user(user)
    return {"user": {"id": user.id, "email": user.email}, "expires_in": 43200}, 201


@app.post("/v1/tokens")
def issue_tokens():
    user, error = authenticate()
    if error:
        return error
    return token_pair(user)


@app.post("/v1/tokens/refresh")
def refresh():
    verify_jwt_in_request(refresh=True, locations=["json"])
    payload = get_jwt()
    # Rotation: the used token goes on the blocklist; if it was already there, refuse.
    with pool.connection() as conn:
        revoked = conn.execute(
            "INSERT INTO baseline_token_blocklist (jti, expires_at) "
            "VALUES (%s, to_timestamp(%s)) ON CONFLICT (jti) DO NOTHING RETURNING jti",
            (payload["jti"], payload["exp"]),
        ).fetchone()
    if revoked is None:
        return jsonify(error={"code": "invalid_token"}), 401
    return token_pair(find_user_by_id(get_jwt_identity()))


@app.get("/v1/me")
def me():
    # Bearer token first (API clients), then the Flask-Login cookie (browsers).
    if verify_jwt_in_request(optional=True, locations=["headers"]) is not None:
        user = get_current_user()
        return {"id": user.id, "email": user.email, "authenticated_via": "bearer"}
    if current_user.is_authenticated:
        return {"id": current_user.id, "email": current_user.email, "authenticated_via": "session"}
    return jsonify(error={"code": "not_authenticated"}), 401
