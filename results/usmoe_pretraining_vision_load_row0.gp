set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row0.png.tmp.20991'
$m << EOD
0.135846 0.147197 0.0926471 0.124632 0.102022 0.104688 0.170313 0.122656
0.123989 0.132307 0.135202 0.109467 0.0984375 0.133502 0.132904 0.134191
EOD
set title "Token choice, k=1: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
