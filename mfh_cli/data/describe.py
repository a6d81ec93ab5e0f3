import pandas as pd
def describe_frame(ds): return pd.DataFrame({"rows":[len(ds)]})
