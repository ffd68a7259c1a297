//! Liveness and readiness while the database goes away: `/api/health` keeps answering 200,
//! `/api/ready` answers 503 `database_unavailable`, and so does every route that needs the
//! database (authenticated ones included: a token cannot be checked, which is not a 401).
//! PostgreSQL only: its test database can be dropped under a live pool.

use crate::support::{Req, World, error_of, send};
use pilot_storage::testing::Backend;

#[actix_web::test]
async fn readiness_fails_while_the_database_is_unreachable() {
    let Some(world) = World::new(Backend::Postgres).await else {
        return;
    };
    let app = crate::support::app_for(world.state.clone()).await;
    assert_eq!(send(&app, Req::get("/api/ready")).await.status, 200);
    let World { db, alice, .. } = world;
    // Dropping the test database ends every connection to it.
    drop(db);
    for req in [
        Req::get("/api/ready"),
        Req::get("/api/plans").by(&alice),
        Req::post("/api/hooks/hook_x"),
    ] {
        let reply = send(&app, req).await;
        assert_eq!(reply.status, 503, "{}", reply.text);
        let (code, _, _) = error_of(&reply);
        assert_eq!(code, "database_unavailable");
    }
    let health = send(&app, Req::get("/api/health")).await;
    assert_eq!(health.status, 200);
}
