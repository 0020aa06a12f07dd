"""Engine replicas on Ray Serve: the second EngineClient implementation (engine/interface.py).

replica.py is the Serve deployment (one in-process Engine per replica), client.py the RemoteEngine the
front ends talk to through DeploymentHandles, cluster.py joins or starts the cluster and deploys. Only a
server started with `--ray` imports this package (and Ray).
"""
