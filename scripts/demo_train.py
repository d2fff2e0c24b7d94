"""Train a small classifier on a data set scikit-learn ships, log it to a local MLflow store,
register it and point the alias ``champion`` at it. Prints the model URI to convert."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out", help="folder for the MLflow store and sample rows")
    ap.add_argument("--name", default="demo-wine")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    uri = f"sqlite:///{out / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("edge-runtime-demo")

    data = load_wine(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace("/", "_"))
    X_train, X_test, y_train, y_test = train_test_split(X, data.target, test_size=0.3, random_state=0,
                                                        stratify=data.target)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
    print(f"trained {type(model[-1]).__name__} on wine: test accuracy {model.score(X_test, y_test):.3f}")

    with mlflow.start_run(run_name="demo") as run:
        info = mlflow.sklearn.log_model(model, name="model", input_example=X_train.head(5),
                                        signature=infer_signature(X_train, model.predict(X_train)),
                                        registered_model_name=args.name)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(args.name, "champion", info.registered_model_version)
    pd.DataFrame(X_test).head(5).to_csv(out / "rows.csv", index=False)
    X_train.to_csv(out / "calibration.csv", index=False)
    print(f"logged run {run.info.run_id} as models:/{args.name}/{info.registered_model_version} "
          f"(alias champion) in {uri}")


if __name__ == "__main__":
    main()
